"""billhook's test doubles, shipped with it as Starlette ships `testclient`.

What billhook's own tests, its benchmarks and `billhook demo` use, and what an
application that embeds billhook can use in its tests:

- `billhook.testing.stripe`, `billhook.testing.polar`: signed webhook
  deliveries (`stripe_event_body` + `stripe_headers`, `polar_event` +
  `polar_headers`) and realistic provider objects with planted personal data.
- `billhook.testing.fakes`: local HTTP fakes of the Stripe and Polar APIs
  (`stripe_api.stripe_fake`, `polar_api.polar_fake`) that the real `stripe`
  and `polar-sdk` packages talk to.
- `billhook.testing.settings`: the configuration of a test deployment
  (`make_settings`, `write_config`) and its credentials.
- `billhook.testing.servers`: real servers on loopback (`serve_in_thread`,
  `RedisServer`).

Nothing here imports pytest: the package ships in the wheel, pytest does not.
"""

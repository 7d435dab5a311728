"""worker: the processes around the log — web server, projector workers, CLI."""

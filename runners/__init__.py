"""Command line and execution backends of nago-spec: the only place with processes and files of a run."""

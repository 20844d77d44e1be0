"""The server's jobs: the queue (``queue``), job folders on disk (``store``), the worker process and
its pipe protocol (``worker``, ``runner``), what a running job shows (``monitor``), result files
(``results``) and the checks of uploaded files (``inputcheck``)."""

"""The server's jobs: the queue (``queue``), its workers (``slots``, ``dispatch``, ``executors``: worker
processes per device, or Ray actors: ``ray_runner``, ``ray_actor``) and how a job ends (``outcomes``), job
folders on disk (``store``), running one job (``job_run``), the worker process and its pipe protocol
(``worker``, ``runner``), what a running job shows (``monitor``), result files (``results``) and the checks
of uploaded files (``inputcheck``)."""

"""Benchmarks: each module's ``main(argv)`` prints its figures (``nfsd bench WHICH``, BENCHMARKS.md).

Thin faces over the engine; nothing at run time imports them.
"""

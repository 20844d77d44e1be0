"""``nfsd batch MANIFEST``: texture many meshes from one list, in this process or through a server.

``manifest`` reads the list (.csv or .json) into rows of raw values; ``plan`` checks every row with
``nfsd.settings.resolve`` and the mesh loader before anything runs and decides which rows are done
already (their folder's finished marker); ``local`` runs rows with the engine here, ``remote`` submits
them to any ``nfsd serve`` over its HTTP API (``remote_files`` turns a result .npz into files);
``summary`` prints the table and writes ``summary.json``; ``command`` ties them together for the CLI.
"""

"""Meshes: the ``Mesh`` container and its checks (``mesh``), files (``mesh_files`` reads them through the
parsers of ``mesh_readers``; ``glb_export`` writes the textured GLB), the add-on's wire
.npz (``wire``), generated meshes (``builtin_meshes``), UV unwrapping (``unwrap``) and UV seams
(``seams``)."""

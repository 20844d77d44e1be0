"""Meshes: the ``Mesh`` container and its checks (``mesh``), files (``mesh_files``), the add-on's wire
.npz (``wire``), generated meshes (``builtin_meshes``), UV unwrapping (``unwrap``) and UV seams
(``seams``)."""

"""Meshes encoded in memory (VTK XML, legacy VTK, PLY), so files are written by Python, whose
write errors (a full disk) are exceptions, where VTK's own file writers abort the process."""

from __future__ import annotations

import numpy as np


def encode_mesh(mesh, fmt: str) -> bytes:
    """`mesh` (a pyvista PolyData) as the bytes of a .vtp, .vtk (both binary, with its point
    and field data) or .ply (binary, points and faces only) file."""
    if fmt == "ply":
        return _ply(np.asarray(mesh.points, np.float32), np.asarray(mesh.faces, np.int64))
    if fmt == "vtp":
        from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

        writer = vtkXMLPolyDataWriter()
        writer.SetDataModeToBinary()  # base64 inline: the output string is ASCII
    elif fmt == "vtk":
        from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

        writer = vtkPolyDataWriter()
        writer.SetFileTypeToBinary()
    else:
        raise ValueError(f"unknown mesh format {fmt!r}")
    writer.SetInputData(mesh)
    writer.SetWriteToOutputString(True)
    if not writer.Write():
        raise RuntimeError(f"VTK could not encode a {fmt} mesh")
    if fmt == "vtp":
        return writer.GetOutputString().encode("ascii")
    return writer.GetOutputStdString()  # bytes: the binary legacy file


def _ply(points: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary little-endian PLY of (n, 3) float32 points and VTK's flat face list
    ([k, i_1..i_k] per face)."""
    triangles = len(faces) % 4 == 0 and bool((faces[::4] == 3).all())
    polygons = []
    at = 0
    while not triangles and at < len(faces):  # (k, indices...) records
        k = int(faces[at])
        polygons.append(faces[at + 1 : at + 1 + k])
        at += k + 1
    n_faces = len(faces) // 4 if triangles else len(polygons)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment layerscan\n"
        f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {n_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    body = [np.ascontiguousarray(points, "<f4").tobytes()]
    if triangles:
        rows = np.zeros(n_faces, dtype=[("k", "u1"), ("i", "<i4", (3,))])  # (n_faces,) records
        rows["k"], rows["i"] = 3, faces.reshape(-1, 4)[:, 1:]
        body.append(rows.tobytes())
    for polygon in polygons:
        body.append(np.uint8(len(polygon)).tobytes() + polygon.astype("<i4").tobytes())
    return header + b"".join(body)

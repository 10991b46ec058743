"""The operator image: ``make image`` (``python -m image``), or ``build_image()`` from Python.

Built from the repository's ``Dockerfile`` by buildah from Debian (no Docker daemon), on a
``debian:bookworm-slim`` made here from Debian's packages when no registry serves one
(``image.base``). The result is an OCI archive in the tool cache, named
``localhost/vectorschema:<version>-<key>``; ``image.run`` runs it without a node.
"""

from image.build import BuiltImage, build_image
from image.tools import ImageError

__all__ = ["BuiltImage", "ImageError", "build_image"]

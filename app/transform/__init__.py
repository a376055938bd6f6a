"""Request/response transformation: schema versions, field rules, headers and query.

``app.transformation_engine`` is the public import path (the seed's); this package holds the parts.
"""

from app.transform.converter import CONVERT_TYPES, ConvertType, DataConverter
from app.transform.engine import TransformationEngine
from app.transform.errors import TransformationError
from app.transform.mapper import SchemaMapper
from app.transform.rules import Direction, TransformationRule

__all__ = [
    "CONVERT_TYPES",
    "ConvertType",
    "DataConverter",
    "Direction",
    "SchemaMapper",
    "TransformationEngine",
    "TransformationError",
    "TransformationRule",
]

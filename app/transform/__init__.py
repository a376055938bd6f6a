"""Request/response transformation: schema versions, field rules, headers and query.

``app.transformation_engine`` is the public import path (the seed's); this package holds the parts.
"""

from app.transform.compiled import CompiledTransform
from app.transform.converter import CONVERT_TYPES, ConvertType, DataConverter
from app.transform.engine import TransformationEngine
from app.transform.errors import TransformationError
from app.transform.mapper import SchemaMapper
from app.transform.route_config import HeaderOps, MappingSpec, QueryOps, RouteTransform
from app.transform.rules import Direction, TransformationRule
from app.transform.spec import RuleSpec, rule_from_spec

__all__ = [
    "CONVERT_TYPES",
    "CompiledTransform",
    "ConvertType",
    "DataConverter",
    "Direction",
    "HeaderOps",
    "MappingSpec",
    "QueryOps",
    "RouteTransform",
    "RuleSpec",
    "SchemaMapper",
    "TransformationEngine",
    "TransformationError",
    "TransformationRule",
    "rule_from_spec",
]

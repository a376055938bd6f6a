"""The seed's Transformation Engine: transforms request and response data between API schema
versions and formats (schema mapping, type conversion, custom and declared field rules, both
directions), plus the per-route config the gateway compiles from ``transform:``.

The implementation lives in ``app.transform``; this module is the public import path.

Field paths: ``agent.id`` (nested object), ``items[].agent_id`` (each object of the list
``items``), ``orders[].lines[].sku`` (nested lists); a trailing ``tags[]`` (each element) only in
in-place rules. Rules address the backend's field names: request rules run after mapping the
client's version to the backend's, response rules before mapping the answer back.
"""

import app.transform as _package
from app.transform import (
    CONVERT_TYPES,
    CompiledTransform,
    ConvertType,
    DataConverter,
    Direction,
    HeaderOps,
    MappingSpec,
    QueryOps,
    RouteTransform,
    RuleSpec,
    SchemaMapper,
    TransformationEngine,
    TransformationError,
    TransformationRule,
    rule_from_spec,
)

# One list of public names, kept where the package defines them.
__all__ = list(_package.__all__)

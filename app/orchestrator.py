"""The seed's orchestrator: ``ApiGatewayOrchestrator`` runs each request through the components.

```python
gateway = ApiGatewayOrchestrator(config)
await gateway.start()
body, status = await gateway.handle_request("alice", "/api/v1/agents", "GET", None)
```

The implementation lives in ``app/pipeline/``; this module is its public face.
"""

from app.pipeline.orchestrator import ApiGatewayOrchestrator

__all__ = ["ApiGatewayOrchestrator"]

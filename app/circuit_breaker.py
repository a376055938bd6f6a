"""The seed's circuit breaker, shared by the fleet: CLOSED, OPEN and HALF_OPEN per endpoint.

```python
cb_manager = CircuitBreakerManager()            # or CircuitBreakerManager(store) for the fleet
config = CircuitBreakerConfig(failure_threshold=5, recovery_timeout=60, success_threshold=3)
circuit_breaker = cb_manager.get_circuit_breaker("/api/v1/agents", config)
try:
    result = await circuit_breaker.call(backend_service_call, endpoint_params)
except CircuitBreakerOpenError:
    result = cb_manager.fallback_service.get_fallback("/api/v1/agents")
circuit_breaker.get_stats()   # {'state': 'closed', 'failure_count': 2, 'success_count': 98, ...}
```

The implementation lives in ``app/breaker/``; this module is its public face.
"""

from app.breaker.breaker import ApiCircuitBreaker, CircuitBreakerOpenError, CircuitBreakerStats
from app.breaker.fallback import ApiFallbackService
from app.breaker.manager import CircuitBreakerManager
from app.breaker.model import CircuitState
from app.config import CircuitBreakerSpec

# The seed's name for the knobs; one model serves the config file and the library.
CircuitBreakerConfig = CircuitBreakerSpec

__all__ = [
    "ApiCircuitBreaker",
    "ApiFallbackService",
    "CircuitBreakerConfig",
    "CircuitBreakerManager",
    "CircuitBreakerOpenError",
    "CircuitBreakerStats",
    "CircuitState",
]

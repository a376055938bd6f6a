"""The seed's rate limiter: ``ApiGatewayRateLimiter`` and ``ApiGatewayManager``.

```python
limiter = ApiGatewayRateLimiter()        # or ApiGatewayRateLimiter(store) for the fleet
allowed = await limiter.is_allowed("alice", "/api/v1/agents")
```

The implementation lives in ``app/ratelimit/``; this module is its public face.
"""

from app.ratelimit.limiter import ApiGatewayManager, ApiGatewayRateLimiter, RateLimitConfig, RateLimitState

__all__ = ["ApiGatewayManager", "ApiGatewayRateLimiter", "RateLimitConfig", "RateLimitState"]

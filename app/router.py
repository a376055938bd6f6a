"""The seed's router: ``ApiGatewayRouter`` with its routes, targets and load balancing.

The implementation lives in ``app/routing/``; this module is its public face.
"""

from app.routing.router import ANY_METHOD, ApiGatewayRouter, LoadBalancer, Route, RouteManager, RouteMatch, Target

__all__ = ["ANY_METHOD", "ApiGatewayRouter", "LoadBalancer", "Route", "RouteManager", "RouteMatch", "Target"]

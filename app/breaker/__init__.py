"""Circuit breakers shared by the fleet (the public names are in ``app.circuit_breaker``).

- ``model``: states, outcomes and the local view a replica keeps of one breaker;
- ``breaker``: ``ApiCircuitBreaker``, one breaker (admission, outcome, the store calls);
- ``manager``: ``CircuitBreakerManager``, the breakers of a process and their events;
- ``fallback``: ``ApiFallbackService``, what a client gets while a circuit is open;
- ``stage``: the breaker's place in the request pipeline.
"""

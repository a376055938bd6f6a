"""The response cache shared by the fleet: policy (strategy), entries, the store calls, the stage.

``app.cache_manager`` is the public face (the seed's names); this package holds the parts.
"""

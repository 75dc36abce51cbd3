"""HTTP blueprints: they parse, authorize and serialize; the logic lives in the plain modules."""

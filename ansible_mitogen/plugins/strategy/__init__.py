"""Strategy plugins: builtin strategies with StrategyMixin in front (strategy_plugins dir)."""

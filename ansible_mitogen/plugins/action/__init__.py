"""Action plugins: mitogen_get_stack (action_plugins dir)."""

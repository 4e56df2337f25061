"""testinfra configuration shared by the lab's verify tests."""

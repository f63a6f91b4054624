"""Conveyor's control plane: what a pipeline is and how an execution moves."""

"""Company assistants: their versions, who may use them, the prompt they make, guided flows."""

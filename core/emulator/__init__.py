"""A local Gemini Batch Mode API server that the real google-genai SDK can talk to."""

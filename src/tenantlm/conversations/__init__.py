"""Conversation memory: the Conversations API's conversations and items, history fitted to a model's context by the
tenant's memory policy, retention and session end."""

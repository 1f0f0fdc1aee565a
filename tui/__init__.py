"""The Textual monitor for the gembatch engine."""

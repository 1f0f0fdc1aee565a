"""The gembatch engine: validation, upload, create, poll and download of Gemini batch jobs. No UI imports."""

"""The report: figures (matplotlib), the HTML/Markdown page, best practices."""

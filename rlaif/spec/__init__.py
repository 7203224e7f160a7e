"""What the user writes, loaded strictly with the line of every key: pipelines, constitutions, templates, prompts, methods."""

"""The evaluation library: metrics against hand-computed cases, and the report files."""

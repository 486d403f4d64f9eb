"""What every stage may use: errors naming file, line or key; line and JSON loaders; config schemas."""

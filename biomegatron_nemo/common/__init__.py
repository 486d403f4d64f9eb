"""What every stage may use: errors naming file, line or key; line and JSON loaders; config schemas;
atomic writes and the pictures the reports draw."""

"""Reading documents in the job: ``ReadDocuments`` (``sources``) over text, JSON Lines, CSV and Parquet
files, with the field rules they share and the binary files they refuse."""

"""The knowledge base: loading documents, chunking, embedding, indexing, retrieval and answers."""

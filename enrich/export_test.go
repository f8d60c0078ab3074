package enrich

// ChunkHolding reports whether ch holds new requests back.
func ChunkHolding(ch *Chunk) bool { return ch.held() }

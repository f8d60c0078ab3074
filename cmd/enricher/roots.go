package main

// The consumer's container image (infra/image.go) holds the binary and
// nothing else: where the system has no CA certificates, TLS to AWS and the
// model endpoint verifies against the Mozilla roots compiled in here. A
// system that has its own (Lambda, a laptop) keeps using them.
import _ "golang.org/x/crypto/x509roots/fallback"

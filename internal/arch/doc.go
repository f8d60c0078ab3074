// Package arch holds the test that keeps the rooms of docs/architecture.md
// apart: which package may import what. It has no code of its own.
package arch

// Package db owns the control plane's PostgreSQL schema: the goose SQL
// migrations in migrations/, embedded into every binary that imports this
// package, and Migrate, which applies them (wrenn-cp migrate up|down|status,
// and at start when configured). It imports nothing from the tiers.
package db

import (
	"embed"
	"io/fs"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations returns the embedded migration files, rooted at the
// migrations directory (00001_initial.sql, ...).
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		// fs.Sub only fails on an invalid path; "migrations" is valid.
		panic(err)
	}
	return sub
}

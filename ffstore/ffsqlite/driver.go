package ffsqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"modernc.org/sqlite"
)

// This file is the only one that names the SQLite driver. The driver was chosen by
// measurement (see the package doc): modernc.org/sqlite is pure Go, so the store builds
// with CGO_ENABLED=0 and cross-compiles.

// newDriver returns a driver of our own, so nothing we set up leaks into the driver that
// the package registers globally as "sqlite".
func newDriver() driver.Driver { return &sqlite.Driver{} }

// sqliteCode returns the extended SQLite result code carried by err, if any.
func sqliteCode(err error) (int, bool) {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code(), true
	}
	return 0, false
}

// connector opens connections to one file and runs init statements (pragmas) on each.
type connector struct {
	drv  driver.Driver
	dsn  string
	init []string
}

var _ driver.Connector = (*connector)(nil)

func newConnector(path string, init []string) *connector {
	return &connector{drv: newDriver(), dsn: fileURI(path), init: init}
}

// Connect implements driver.Connector.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("sqlite driver connection does not implement ExecerContext")
	}
	for _, q := range c.init {
		if _, err := ex.ExecContext(ctx, q, nil); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	return conn, nil
}

// Driver implements driver.Connector.
func (c *connector) Driver() driver.Driver { return c.drv }

// fileURI turns a file path into an SQLite URI filename ("file:/abs/path.db"), escaping
// the characters that URIs give a meaning to, so any path works and no query parameter
// is ever read from it.
func fileURI(path string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return "file:" + r.Replace(path)
}

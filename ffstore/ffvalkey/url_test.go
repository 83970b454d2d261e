package ffvalkey_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	good := []struct {
		url    string
		shards int
		prefix string
	}{
		{url: "redis://localhost:6379"},
		{url: "redis://:secret@127.0.0.1:7000/3?shards=4&prefix=app1", shards: 4, prefix: "app1"},
		{url: "valkey://user:p%40ss@[::1]:6380/0"},
		{url: "rediss://cache.example:6380?skip_verify=true&dial_timeout=2s"},
		{url: "valkeys://cache.example"},
		{url: "redis+cluster://a:7000,b:7001,c:7002?shards=16", shards: 16},
		{url: "valkey+cluster://a:7000?addr=b:7001&addr=c:7002&client_name=ff"},
		{url: "rediss+cluster://a:7000,b"},
	}
	for _, g := range good {
		t.Run(g.url, func(t *testing.T) {
			t.Parallel()
			o, err := ffvalkey.ParseURL(g.url)
			require.NoError(t, err)
			require.Equal(t, g.shards, o.Shards)
			require.Equal(t, g.prefix, o.KeyPrefix)
		})
	}
	bad := []string{
		"localhost:6379",
		"http://localhost",
		"redis://a:1,b:2",                       // several hosts need a cluster scheme
		"redis+cluster://a:7000/2",              // a cluster has database 0 only
		"redis://localhost/x",                   // database is a number
		"redis://localhost?shards=0x",           // shards is a number
		"redis://localhost?shards=5000",         // at most MaxShards
		"redis://localhost?prefix=a%7Bb",        // no braces in the prefix
		"redis://localhost?skip_verify=true",    // TLS only
		"redis://localhost?unknown=1",           // unknown parameters are refused
		"redis://localhost?shards=1&shards=2",   // given twice
		"redis://localhost:99999",               // bad port
		"redis://localhost?dial_timeout=soon",   // a duration
		"rediss+cluster://a:1?skip_verify=what", // a boolean
		"redis://localhost?shards=4;prefix=x",   // a query that does not parse
		"redis://localhost#x",                   // a fragment
		"redis://localhost/1?prefix=p#",         // an empty one
	}
	for _, u := range bad {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			_, err := ffvalkey.ParseURL(u)
			require.ErrorIs(t, err, fftype.ErrValidation)
		})
	}
}

// TestParseURLCAFile checks the ca_file parameter: a PEM file of CA certificates is
// accepted on TLS schemes, and each way the file can be unfit is refused with a
// validation error wrapping a *CAFileError that says which.
func TestParseURLCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files, err := testdb.WriteTLSFiles(dir)
	require.NoError(t, err)
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600))
	q := url.QueryEscape

	for _, u := range []string{
		"rediss://:pw@127.0.0.1:6380/3?ca_file=" + q(files.CAFile),
		"valkeys+cluster://a:7000,b:7001?ca_file=" + q(files.CAFile),
	} {
		_, err := ffvalkey.ParseURL(u)
		require.NoError(t, err, u)
	}

	bad := []struct {
		name   string
		url    string
		reason error
	}{
		{"Missing", "rediss://h?ca_file=" + q(filepath.Join(dir, "absent.pem")), ffvalkey.ErrCAFileMissing},
		{"Empty", "rediss://h?ca_file=", ffvalkey.ErrCAFileMissing},
		{"Unreadable", "rediss://h?ca_file=" + q(dir), ffvalkey.ErrCAFileUnreadable}, // a directory: root reads any file
		{"NotPEM", "rediss://h?ca_file=" + q(notPEM), ffvalkey.ErrCAFileNotPEM},
		{"PrivateKeyOnly", "rediss+cluster://h?ca_file=" + q(files.KeyFile), ffvalkey.ErrCAFileNotPEM},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			_, err := ffvalkey.ParseURL(b.url)
			require.ErrorIs(t, err, fftype.ErrValidation)
			require.ErrorIs(t, err, b.reason)
			var ce *ffvalkey.CAFileError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, b.reason, ce.Reason)
			require.Contains(t, err.Error(), "ca_file")
		})
	}

	t.Run("PlainScheme", func(t *testing.T) {
		t.Parallel()
		_, err := ffvalkey.ParseURL("redis://h?ca_file=" + q(files.CAFile))
		require.ErrorIs(t, err, fftype.ErrValidation)
		var ce *ffvalkey.CAFileError
		require.NotErrorAs(t, err, &ce, "a ca_file on a plain scheme is a misuse, not a bad file")
	})
}

// TestParseURLDoesNotQuoteAPassword: a password with an unescaped '/', '?' or '#' cuts
// the URL before its '@', so its user:password reads as a host, and the rest of it as the
// database or a parameter (when what precedes the cut passes for a port); the error, which
// callers log, must not quote any of it, and says to percent-escape. Nor may the error for
// a URL without a scheme, or for a bad percent-escape in the user name or password. An '@'
// escaped as %40 is taken.
func TestParseURLDoesNotQuoteAPassword(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"redis://user:s3cretpw?x@127.0.0.1:6379",
		"redis://user:s3cretpw/x@127.0.0.1:6379",
		"redis://:s3cretpw/x@127.0.0.1:6379",
		"redis://:2024/s3cretpw@127.0.0.1:6379/0",
		"redis://default:2024?s3cretpw@127.0.0.1:6379",
		"redis://default:2024?s3cretpw=1@127.0.0.1:6379",
		"redis://default:2024#s3cretpw@127.0.0.1:6379",
		"user:s3cretpw@127.0.0.1:6379",
	} {
		_, err := ffvalkey.ParseURL(raw)
		require.ErrorIs(t, err, fftype.ErrValidation, raw)
		require.NotContains(t, err.Error(), "s3cretpw", raw)
		if strings.Contains(raw, "://") {
			require.ErrorContains(t, err, "percent-escape", raw)
		}
	}
	// A bad percent-escape, which url.PathUnescape's error would quote: a piece of the
	// user name or password.
	for raw, part := range map[string]string{
		"redis://:s3cr%etpw@127.0.0.1:6379/0":   "password",
		"redis://default:s3cr%e@127.0.0.1:6379": "password",
		"redis://us%er:pw@127.0.0.1:6379/0":     "user name",
	} {
		_, err := ffvalkey.ParseURL(raw)
		require.ErrorIs(t, err, fftype.ErrValidation, raw)
		require.NotContains(t, err.Error(), "%e", raw)
		require.ErrorContains(t, err, part, raw)
		require.ErrorContains(t, err, "percent-escape", raw)
	}
	_, err := ffvalkey.ParseURL("redis://:2024%2Fs3cretpw@127.0.0.1:6379/0?client_name=me%40host")
	require.NoError(t, err)
}

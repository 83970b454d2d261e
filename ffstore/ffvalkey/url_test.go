package ffvalkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
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
	}
	for _, u := range bad {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			_, err := ffvalkey.ParseURL(u)
			require.ErrorIs(t, err, fftype.ErrValidation)
		})
	}
}

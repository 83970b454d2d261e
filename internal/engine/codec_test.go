package engine

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

// fill sets every field reachable from v to a random non-zero value, so that a field the
// codec forgets shows up as a difference after a round trip.
func fill(t *testing.T, v reflect.Value, rng *rand.Rand) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+rng.IntN(26))) + "é")
	case reflect.Int, reflect.Int64:
		if v.Type() == reflect.TypeFor[time.Duration]() || v.Type() == reflect.TypeFor[fftype.Duration]() {
			v.SetInt(int64(rng.IntN(1e6)) * int64(time.Millisecond))
		} else {
			v.SetInt(int64(rng.IntN(1e6)) - 5e5)
		}
	case reflect.Uint64:
		v.SetUint(rng.Uint64())
	case reflect.Float64:
		v.SetFloat(rng.Float64() * 10)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 3, 3)
		for i := 0; i < 3; i++ {
			fill(t, s.Index(i), rng)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := 0; i < 3; i++ {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(t, k, rng)
			k.SetString(k.String() + string(rune('0'+i)))
			fill(t, e, rng)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(t, p.Elem(), rng)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(0, rng.Int64N(1<<62)).UTC()))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			fill(t, v.Field(i), rng)
		}
	default:
		t.Fatalf("fill: unhandled kind %s of %s", v.Kind(), v.Type())
	}
}

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		var x fftype.Execution
		fill(t, reflect.ValueOf(&x).Elem(), rng)
		got, err := decodeExecution(encodeExecution(&x))
		require.NoError(t, err)
		require.Equal(t, &x, got)

		var a fftype.Attempt
		fill(t, reflect.ValueOf(&a).Elem(), rng)
		gotA, err := decodeAttempt(encodeAttempt(&a))
		require.NoError(t, err)
		require.Equal(t, &a, gotA)
	}
	zero := &fftype.Execution{}
	got, err := decodeExecution(encodeExecution(zero))
	require.NoError(t, err)
	require.Equal(t, zero, got)
}

func TestCodecRefusesDamage(t *testing.T) {
	t.Parallel()
	x := &fftype.Execution{ID: fftype.NewExecutionID(1), Tags: map[string]string{"a": "b"}, Capabilities: []string{"gpu"}}
	b := encodeExecution(x)
	for n := 0; n < len(b); n++ {
		_, err := decodeExecution(b[:n])
		require.Error(t, err, "truncated at %d", n)
	}
	_, err := decodeExecution(append(b, 0))
	require.Error(t, err, "trailing bytes")
	_, err = decodeAttempt(b)
	require.Error(t, err, "wrong record kind")
}

func FuzzDecodeExecution(f *testing.F) {
	f.Add(encodeExecution(&fftype.Execution{ID: "s1_x", Tags: map[string]string{"k": "v"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := decodeExecution(b)
		if err == nil {
			again, err := decodeExecution(encodeExecution(x))
			require.NoError(t, err)
			require.Equal(t, x, again)
		}
	})
}

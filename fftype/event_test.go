package fftype_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

// TestEventTypesListsEveryConstant keeps EventTypes in step with the EventType constants
// declared in event.go, so that a new event type cannot be left out of event filters.
func TestEventTypesListsEveryConstant(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "event.go", nil, 0)
	require.NoError(t, err)
	var declared []fftype.EventType
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "EventType" {
				continue
			}
			lit := v.Values[0].(*ast.BasicLit)
			declared = append(declared, fftype.EventType(lit.Value[1:len(lit.Value)-1]))
		}
	}
	require.NotEmpty(t, declared)
	require.ElementsMatch(t, declared, fftype.EventTypes())
	for _, typ := range declared {
		require.True(t, typ.Known(), typ)
	}
	require.False(t, fftype.EventType("complted").Known())
}

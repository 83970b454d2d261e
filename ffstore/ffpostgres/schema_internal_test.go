package ffpostgres

import "testing"

// TestSchemaVersionIsTheLastMigration keeps SchemaVersion, which a binary writes and
// compares schemas against, equal to the number of migrations it embeds.
func TestSchemaVersionIsTheLastMigration(t *testing.T) {
	t.Parallel()
	if len(migrations) != SchemaVersion {
		t.Fatalf("SchemaVersion is %d, but there are %d migrations", SchemaVersion, len(migrations))
	}
}

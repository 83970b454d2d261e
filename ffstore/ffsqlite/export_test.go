package ffsqlite

import (
	"context"
	"time"
)

// SetIdleCheckpointDelay sets how long the writer waits idle before its TRUNCATE
// checkpoint.
func SetIdleCheckpointDelay(o *Options, d time.Duration) { o.idleCheckpointDelay = d }

// Commits returns the number of group commits the store made.
func Commits(s *Store) int64 { return s.commits.Load() }

// Changed is the change poller's check of the file for commits since its last call.
func Changed(ctx context.Context, s *Store) (bool, error) { return s.changed(ctx) }

// ApplicationID is the id in the header of every store's file.
const ApplicationID = int64(applicationID)

package ffsqlite

import "time"

// SetIdleCheckpointDelay sets how long the writer waits idle before its TRUNCATE
// checkpoint.
func SetIdleCheckpointDelay(o *Options, d time.Duration) { o.idleCheckpointDelay = d }

// Commits returns the number of group commits the store made.
func Commits(s *Store) int64 { return s.commits.Load() }

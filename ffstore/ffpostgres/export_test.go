package ffpostgres

// ChangeChannel returns the LISTEN/NOTIFY channel of s.
func ChangeChannel(s *Store) string { return s.channel }

// SetNotifyInTx makes units send pg_notify inside their own transaction.
func SetNotifyInTx(o *Options, on bool) { o.notifyInTx = on }

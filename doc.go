/*
Package flowfabric is a durable execution engine: executions are created into lanes,
claimed by workers under leases, retried with backoff, recovered when a worker dies, and
kept as a history you can inspect and replay.

# A tour

Open a store and a client on it, then start the client's timers:

	store := ffmem.New(nil) // or an SQLite file, Postgres or Redis
	client, err := flowfabric.NewClient(store, nil)
	client.Start(ctx)
	defer client.Stop()

Create executions. Each names a lane, a kind (the handler that runs it) and a payload;
its [Policy] decides retries, timeouts and lease length:

	res, err := client.Create(ctx, flowfabric.CreateParams{
		Lane: "email", Kind: "send_welcome", Payload: []byte(`{"user":42}`),
		IdempotencyKey: "welcome-42", // a retried create finds the first one
	})

Workers take work through the one claim path, which hands each worker only executions
whose required capabilities it holds — highest priority first, then its lanes and a
lane's namespaces taking turns, then oldest first:

	leases, err := client.Claim(ctx, flowfabric.ClaimParams{
		WorkerID: "mailer", WorkerInstanceID: "mailer-1", Lanes: []string{"email"}, Count: 10,
	})

Every lease carries a [Fence]. The holder renews the lease while it works and finishes
with Complete, Fail (retried per policy), Cancel, Delay or Release; a call with a stale
fence is refused with a typed error and changes nothing, and a retried finishing call by the
same holder returns its first outcome:

	err = client.Complete(ctx, lease.ExecutionID, lease.Fence, []byte(`{"sent":true}`), "")

A worker that dies stops renewing; its lease expires, the execution becomes eligible again,
and the next claim starts a reclaim attempt.

# Errors

Every operation returns *[Error] values with a kind, a stable snake_case code and a
retryable flag. Match them with errors.Is against the sentinels: errors.Is(err,
flowfabric.ErrNotFound), errors.Is(err, flowfabric.ErrStaleLease).

# Time

The engine stamps every time itself, from the store's clock; no call takes a "now". Tests
pass an fftest.Clock in [Config] and call [Client.RunDue] after moving it.
*/
package flowfabric

package cdc_test

import (
	"fmt"

	"github.com/pgrealtime/pgrealtime/cdc"
)

func ExampleParseCustomPayload() {
	p, err := cdc.ParseCustomPayload([]byte(`{"collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann"}}`))
	fmt.Println(p.Collection, p.Event, p.RecordID, string(p.Data), err)
	_, err = cdc.ParseCustomPayload([]byte(`{"collection":"chat"}`))
	fmt.Println(err)
	// Output:
	// chat typing room1 {"user":"ann"} <nil>
	// "event" is required
}

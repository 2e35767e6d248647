"""Fused predictions over MQTT (torch-free; needs paho-mqtt, and amqtt for the embedded broker).

    url.parse_mqtt_url(url) -> BrokerConfig        mqtt:// mqtts:// embedded
    topics.prediction_topic(id) ...                edge-gmm/v1/<id>/prediction|status|metrics
    payload.prediction_payload(...), validate()    JSON Schemas in schema/
    publisher.Publisher                            spool on disk -> QoS 1, seq numbers, retained status + will
    subscriber.Subscriber                          receive, check seq gaps and duplicates
    broker.EmbeddedBroker                          amqtt in a thread, MQTT 3.1.1 only

docs/mqtt.md documents topics and payloads for people writing their own subscribers.
"""

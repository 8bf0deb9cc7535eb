// Publishes one meterd.ingest_batch task (Celery message protocol 2, JSON) with the
// third-party celery-node client, as a Node.js service would.
//   node publish.js <broker url> <events json>
const celery = require("celery-node");

const [broker, eventsJson] = process.argv.slice(2);
const client = celery.createClient(broker, broker, "meterd.ingest");
client.conf.TASK_PROTOCOL = 2;
client.sendTask("meterd.ingest_batch", [JSON.parse(eventsJson)], {});
client
  .isReady()
  .then(() => new Promise((resolve) => setTimeout(resolve, 500)))
  .then(() => client.disconnect())
  .then(() => process.exit(0))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });

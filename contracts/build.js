// Compiles TestStreamRegistry.sol with solc-js (the npm "solc" package pinned in package-lock.json)
// into TestStreamRegistry.json: {"abi": …, "bytecode": "0x…"}, the artifact the Go tests deploy.
// With --check it compiles and fails if the committed artifact differs (scripts/test.sh runs that).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const source = "TestStreamRegistry.sol";
const artifact = path.join(__dirname, "TestStreamRegistry.json");

const input = {
  language: "Solidity",
  sources: { [source]: { content: fs.readFileSync(path.join(__dirname, source), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 100 },
    evmVersion: "london",
    metadata: { bytecodeHash: "none" }, // no source hash in the bytecode: the artifact depends on the code alone
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
const c = out.contracts[source].TestStreamRegistry;
const text = JSON.stringify({ compiler: "solc " + solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object }, null, 1) + "\n";

if (process.argv.includes("--check")) {
  const committed = fs.existsSync(artifact) ? fs.readFileSync(artifact, "utf8") : "";
  if (committed !== text) {
    console.error(`contracts: ${path.basename(artifact)} is stale: run "npm run build" in contracts/ and commit it`);
    process.exit(1);
  }
  console.log(`contracts: ${path.basename(artifact)} is fresh (${solc.version()})`);
} else {
  fs.writeFileSync(artifact, text);
  console.log(`contracts: wrote ${path.basename(artifact)} (${solc.version()})`);
}

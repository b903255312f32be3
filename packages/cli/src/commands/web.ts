import { Command } from 'commander';
import { serveWebApp } from '@dflmoe/web';

export function webCommand(): Command {
  return new Command('web')
    .description('Serve the browser app: a site that joins a consortium from a browser tab (data read in the tab, never uploaded). Prints its address.')
    .option('--listen <host:port>', 'where to serve it (port 0: any free port)', '127.0.0.1:8090')
    .addHelpText(
      'after',
      `
A member prints the consortium's join details for the tab with:
  dflmoe peer --config <its config> --print-join > join.json
Members must listen on a WebSockets address (e.g. "/ip4/0.0.0.0/tcp/9002/ws" in "listen")
and list the tab's peer ID (shown on the page) in "members".
Browsers treat only localhost and https pages as secure: serve other addresses through an https proxy.`,
    )
    .action(async (o: { listen: string }) => {
      const server = await serveWebApp({ listen: o.listen, option: '--listen' });
      process.stdout.write(`${server.url}\n`);
      process.stderr.write('serving the dflmoe browser app; Ctrl-C to stop\n');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
    });
}

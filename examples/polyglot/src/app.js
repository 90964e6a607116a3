addEventListener('fetch', (event) =>
  event.respondWith(
    new Response('Hello from JavaScript!', {
      status: 200,
      headers: { 'content-type': 'text/plain' },
    }),
  ),
);

// The shell: header with navigation, the one search box and sign-in; the page the URL names.
import { useEffect, useState, type FormEvent } from 'react';
import { api } from './api.ts';
import { href, Link, navigate, useLocation } from './router.tsx';
import { HomePage } from './pages/home.tsx';
import { SearchPage } from './pages/search.tsx';
import { RepositoryPage } from './pages/repository.tsx';
import { ManifestPage } from './pages/manifest.tsx';
import { QueryPage } from './pages/query.tsx';
import { ComponentsPage, ComponentPage, ComponentVersionPage } from './pages/components.tsx';

function useUser(): string | undefined {
  const [user, setUser] = useState(api.user);
  useEffect(() => api.onChange(() => setUser(api.user)), []);
  return user;
}

function SearchBox({ initial }: { initial: string }) {
  const [text, setText] = useState(initial);
  useEffect(() => setText(initial), [initial]);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (text.trim()) navigate(href('search', { q: text.trim() }));
  };
  return (
    <form role="search" className="search" onSubmit={submit}>
      <label htmlFor="search-input" className="visually-hidden">Search repositories, tags and digests</label>
      <input id="search-input" type="search" value={text} onChange={(e) => setText(e.target.value)} placeholder="Search repositories, tags, digests" />
      <button type="submit">Search</button>
    </form>
  );
}

function SignIn({ back }: { back: string }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      await api.signIn(user, password);
      navigate(back || href(''));
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="signin-title" className="narrow">
      <h1 id="signin-title">Sign in</h1>
      <p className="muted">With your registry account (the same user name and password as <code>docker login</code>).</p>
      <form onSubmit={submit} className="stack">
        <label>User name <input name="username" autoComplete="username" value={user} onChange={(e) => setUser(e.target.value)} required /></label>
        <label>Password <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required /></label>
        <button type="submit" disabled={busy}>Sign in</button>
        {error && <p role="alert" className="error">{error}</p>}
      </form>
    </section>
  );
}

function Page({ page, params }: { page: string; params: URLSearchParams }) {
  switch (page) {
    case '': return <HomePage />;
    case 'search': return <SearchPage text={params.get('q') ?? ''} />;
    case 'repository': return <RepositoryPage name={params.get('name') ?? ''} />;
    case 'manifest': return <ManifestPage name={params.get('name') ?? ''} reference={params.get('ref') ?? ''} />;
    case 'query': return <QueryPage params={params} />;
    case 'components': return <ComponentsPage params={params} />;
    case 'component': return <ComponentPage name={params.get('name') ?? ''} repository={params.get('repository') ?? ''} />;
    case 'component-version': return <ComponentVersionPage name={params.get('name') ?? ''} version={params.get('version') ?? ''} repository={params.get('repository') ?? ''} />;
    case 'signin': return <SignIn back={params.get('back') ?? ''} />;
    default: return <p role="alert">No page here. <Link to={href('')}>Start over</Link>.</p>;
  }
}

export function App() {
  const { page, params } = useLocation();
  const user = useUser();
  // A page's data depends on who is signed in: remount it when that changes.
  return (
    <>
      <a href="#main" className="skip">Skip to content</a>
      <header className="top">
        <Link to={href('')} className="brand">Trellis</Link>
        <nav aria-label="Main">
          <Link to={href('')} aria-current={page === '' ? 'page' : undefined}>Repositories</Link>
          <Link to={href('query')} aria-current={page === 'query' ? 'page' : undefined}>Query</Link>
          <Link to={href('components')} aria-current={page.startsWith('component') ? 'page' : undefined}>Components</Link>
        </nav>
        <SearchBox initial={page === 'search' ? params.get('q') ?? '' : ''} />
        <div className="account">
          {user ? (
            <>
              <span data-testid="signed-in-user">{user}</span>
              <button type="button" className="small" onClick={() => api.signOut()}>Sign out</button>
            </>
          ) : page !== 'signin' && <Link to={href('signin', { back: window.location.pathname + window.location.search })}>Sign in</Link>}
        </div>
      </header>
      <main id="main" key={user ?? ''}>
        <Page page={page} params={params} />
      </main>
    </>
  );
}
